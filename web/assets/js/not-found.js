// not-found.js — the 404 page only needs what every page has.
import { initPage } from "./common.js";

initPage();
